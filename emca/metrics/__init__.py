"""Evaluation metrics and protocols (PATN / XingGAN and GFLA) for pose-transfer images.

- :mod:`emca.metrics.ssim`, :mod:`emca.metrics.psnr`: batched torch SSIM / PSNR with skimage semantics;
- :mod:`emca.metrics.lpips`: LPIPS from the ``lpips`` package with locally loaded backbone weights;
- :mod:`emca.metrics.inception`, :mod:`emca.metrics.fid`: Inception features, FID, IS, cached statistics;
- :mod:`emca.metrics.protocol`: protocol configs (``conf/eval/*.yaml``) parsed into metric specs;
- :mod:`emca.metrics.images`, :mod:`emca.metrics.generate`: generated-image files, generation from a model;
- :mod:`emca.metrics.scoring`, :mod:`emca.metrics.report`, :mod:`emca.metrics.evaluate`: the run of ``eval.py``.
"""
