r"""SoftCAM (Djoumessi & Berens, MIDL 2026): turn a CNN into a self-explainable one.

The convolutional backbone is kept; global average pooling and the fully connected classifier are
replaced by a 1×1 convolution (with bias) from the last feature map $F \in \mathbb{R}^{C\times h\times w}$
to K signed *class-evidence maps*

$$ E_k(i, j) = b_k + \sum_c W_{kc} F_c(i, j), $$

and the logits are a spatial pooling of the evidence: the average (the paper), the max, or the
log-sum-exp with a temperature $T$, a soft pooling between the two:

$$ y_k^{avg} = \frac{1}{hw}\sum_{ij} E_k(i,j), \qquad y_k^{max} = \max_{ij} E_k(i,j), \qquad
   y_k^{lse} = T \log \frac{1}{hw} \sum_{ij} e^{E_k(i,j)/T}
   \;\xrightarrow[T\to\infty]{}\; y_k^{avg}, \;\xrightarrow[T\to 0]{}\; y_k^{max}. $$

Training adds the ElasticNet penalty $\lambda_1\lVert E\rVert_1 + \lambda_2\lVert E\rVert_2$ on the evidence
maps to the cross-entropy (`elastic_net`, `fit`). The explanation of class k is ReLU(E_k), upsampled
(`fastcam.SoftCAM`).

>>> net = fastcam.softcam.convert(model, num_classes=2)     # torchvision-layout ResNet / VGG / DenseNet
>>> logits, evidence = net(images)                          # (B, K), (B, K, h, w)
>>> history = fastcam.softcam.fit(net, loader, epochs=50, device="cuda", checkpoint_dir="ckpt")
>>> maps = fastcam.SoftCAM(net)(images)                     # (B, H, W) in [0, 1]
"""
from fastcam.ops import pool_evidence
from fastcam.ops._checks import POOLS
from fastcam.softcam.checkpoint import load, save
from fastcam.softcam.convert import convert
from fastcam.softcam.modules import EvidenceHead, SoftCAMNet, check_softcam_output
from fastcam.softcam.train import elastic_net, fit

__all__ = [
    "POOLS",
    "EvidenceHead",
    "SoftCAMNet",
    "check_softcam_output",
    "convert",
    "elastic_net",
    "fit",
    "load",
    "pool_evidence",
    "save",
]
