"""Quality metrics, the benchmark and the evaluation harness (see the README, "Evaluation and benchmark").

`metrics` is numpy/OpenCV/scikit-image only and has no dependency on the pipeline; `identity` wraps
dlib's face-recognition model (optional); `bench` and `evaluate` drive the pipeline.
"""
