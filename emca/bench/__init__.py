"""Benchmarks that print figures: ``emca bench attention | training | gpu-report``.

- :mod:`emca.bench.attention`: the attention backends at XingGAN's shapes;
- :mod:`emca.bench.training`: training iterations and inference of whole models, emca's Lightning module
  against a bare PyTorch loop of the same networks;
- :mod:`emca.bench.gpu_report`: everything above and the GPU tests, in one report for one GPU.
"""
