"""Evaluation metrics and protocols (PATN / XingGAN and GFLA) for pose-transfer images.

- :mod:`emca.metrics.ssim`, :mod:`emca.metrics.psnr`: batched torch SSIM / PSNR with skimage semantics;
- :mod:`emca.metrics.lpips`: LPIPS from the ``lpips`` package with locally loaded backbone weights;
- :mod:`emca.metrics.inception`, :mod:`emca.metrics.fid`: Inception features, FID, IS, cached statistics;
- :mod:`emca.metrics.images`: generated-image files and their checks;
- :mod:`emca.metrics.scoring`, :mod:`emca.metrics.report`: scoring image pairs, the reports;
- :mod:`emca.metrics.validation`: the SSIM logged during training.

A library: it computes numbers from images and never loads a model; the evaluation run that does
(generate from a checkpoint, then score) is the application :mod:`emca.evaluate` behind ``emca eval``, and
the protocol configs (``conf/eval/*.yaml``) are parsed into these metric classes where it starts
(:mod:`emca.protocol`).
"""
