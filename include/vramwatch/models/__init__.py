"""The model factory: shape-true synthetic GGUFs, real model sources, quantization with the build under test,
inspection (ModelFile records, active bytes per token) and the cache that makes every (model, quant) file once."""
