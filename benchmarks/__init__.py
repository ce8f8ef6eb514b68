"""The benchmarks, a folder per question: ``accuracy/`` (how RetinaMask compares with detectron2's
models, and what each of its mechanisms adds), ``thin/`` (long, thin and crossing objects) and
``timing/`` (what inference, training, a predictor call and an export cost). Shared here: the
measuring tools (``harness``), the small synthetic models (``synthetic_configs``), the one
training driver (``training``) and the one results module (``report``, ``plots``). Run from the
checkout's root: ``python -m benchmarks.<folder>.<script>``; results go to ``results/``.
"""
