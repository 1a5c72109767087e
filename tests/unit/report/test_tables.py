"""The report's tables of configs on several GPUs, through the warehouse as the report and the page read them: each
GPU's components and their sum, and "fits on N x size" judged on each card."""

from __future__ import annotations

from support.samples import night, replace
from support.two_gpu import two_gpu_result
from support.warehouses import store_nights

from vramwatch.report import markdown
from vramwatch.report.dashboard import load_dashboard
from vramwatch.report.tables import fits_table, gpu_tables, seed_table_rows
from vramwatch.warehouse.store import Warehouse


def test_a_split_stored_and_read_back_shows_each_gpu_its_sum_and_fits_per_card(sqlite_warehouse_url):
    warehouse = Warehouse(sqlite_warehouse_url)
    one_gpu = night(models=("phi-3.5-moe",), quants=("Q8_0",))
    layer = two_gpu_result("phi-3.5-moe-Q8_0-2gpu-layer")
    row = two_gpu_result("phi-3.5-moe-Q8_0-2gpu-row", split_mode="row", tensor_split="1,1")
    store_nights(warehouse, [[*one_gpu, layer, row]])

    results = warehouse.results_for_run("run000")
    assert [r.config for r in results] == [r.config for r in (*one_gpu, layer, row)]  # the knobs come back
    assert results[2].memory.nvml_process_by_device_mib == layer.memory.nvml_process_by_device_mib

    tables = gpu_tables(results)
    assert [t.title for t in tables] == [
        "phi-3.5-moe/Q8_0/baseline-2gpu-layer: VRAM per GPU (2 GPUs, split by layer, even shares)",
        "phi-3.5-moe/Q8_0/baseline-2gpu-row: VRAM per GPU (2 GPUs, split by row, tensor_split 1,1)"]
    assert tables[0].header[:5] == ["GPU", "GPU Model MiB", "GPU KV MiB", "GPU Compute MiB", "GPU Output MiB"]
    assert tables[0].rows == [
        ["CUDA0", "22403.48", "272.00", "118.02", "–", "22793.50", "23393.50"],
        ["CUDA1", "19901.01", "240.00", "212.51", "–", "20353.52", "20953.52"],
        ["**sum**", "42304.49", "512.00", "330.53", "0.00", "43147.02", "44347.02"]]
    assert [r[0] for r in tables[1].rows] == ["CUDA0", "CUDA0_Split", "CUDA1", "CUDA1_Split", "**sum**"]

    # the seed table keeps to the one-GPU configs: a split never takes the baseline cell of its one-GPU twin
    (seed,) = seed_table_rows(results)
    assert seed.baseline.vram_gib == one_gpu[0].memory.vram_gib
    fits = fits_table(results)
    sizes = fits.header[2:]
    by_quant = {r[1]: dict(zip(sizes, r[2:])) for r in fits.rows}
    assert by_quant["Q8_0"]["48 GiB"] == "baseline" and by_quant["Q8_0"]["24 GiB"] == "offload"
    # CUDA0 needs 23393.50 MiB (22.85 GiB) of NVML: two 24 GiB cards hold the split, two 16 GiB cards do not
    assert by_quant["Q8_0 baseline-2gpu-layer"]["24 GiB"] == "fits on 2 x 24 GiB"
    assert by_quant["Q8_0 baseline-2gpu-layer"]["16 GiB"] == "does not fit on 2 x 16 GiB"
    assert "fits on 2 x 24 GiB" in markdown.render("t", [], [], [], [fits])

    page = load_dashboard(warehouse)
    assert [t.title for t in page.gpu_tables] == [t.title for t in tables] and page.gpu_tables[0].rows == tables[0].rows
    warehouse.close()


def test_a_row_split_without_nvml_per_card_is_not_judged_per_card():
    row = two_gpu_result("phi-3.5-moe-Q8_0-2gpu-row", split_mode="row")
    unknown = replace(row, memory__nvml_process_by_device_mib={})
    (cells,) = fits_table([unknown]).rows
    assert set(cells[2:]) == {"per card not known (row split, no NVML)"}  # the split buffer spans both cards
