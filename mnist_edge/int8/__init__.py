"""Static int8 with onnxruntime (torch-free): quantize, the recipe search and its typed result, rewrites,
diagnosis, the recipe registry.

``quantize`` (QuantizeOptions, quantize_int8), ``search`` (search_int8) with ``settings`` (SearchSettings)
and ``result`` (SearchResult: int8_recipe.json), ``tune`` (quantize_model: what ``mnist-edge quantize``
runs), ``recipes`` (the registry export reads: mnist_edge/zoo/int8_recipes.json, read-only).
"""
