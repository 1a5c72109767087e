"""The regress stage: VRAM tolerances, throughput change points with a confirming rerun, incidents."""
