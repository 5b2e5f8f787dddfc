"""fastcam: fast, batched, on-device class activation maps (Grad-CAM family, CF-CAM, SoftCAM)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = "0.1.0"

setup(
    name="fastcam",
    version=VERSION,
    description="High-performance explanation engine for CNNs: batched Grad-CAM, Grad-CAM++, Score-CAM, "
    "CF-CAM and self-explainable SoftCAM, with Triton kernels and batched GPU DBSCAN.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The Triton kernels live in the top-level kernels/ folder but install as fastcam.kernels,
    # so nothing named plain `kernels` lands in site-packages.
    packages=[*find_packages(include=["fastcam", "fastcam.*"]), "fastcam.kernels"],
    package_dir={"fastcam": "fastcam", "fastcam.kernels": "kernels"},
    package_data={"fastcam": ["py.typed", "data/*", "io/templates/*"]},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.24",
        "scikit-learn>=1.3",
        "scipy>=1.10",
        "triton>=3.0; platform_system == 'Linux'",
        "tqdm>=4.60",
        "safetensors>=0.4",
        "zarr>=3.1",  # the v3 API and its crc32c codec (run stores checksum every chunk)
        "google-crc32c>=1.5",  # zarr's crc32c codec
        "filelock>=3.30",  # the run directory's writer lock (lock_descriptor: an OS lock on our own file)
        "pydantic>=2.5",  # run.json validated against one schema (fastcam.io.run.record)
        "pillow>=9.0",
        "matplotlib>=3.7",
        "pydicom>=2.4",
        "jinja2>=3.0",
    ],
    extras_require={
        "test": [
            "pytest>=7", "pytest-benchmark>=4", "pytest-timeout>=2", "hypothesis>=6",
            "captum>=0.7", "torchcam>=0.4", "scikit-image>=0.21",  # oracles: peers and SSIM
            "mkdocs>=1.6", "mkdocstrings[python]>=0.26",  # the docs build (--strict) is a test
            "onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.17",  # fastcam.deploy: export and parity
            # models users bring (random init from small configs, nothing downloaded) and 3-D datasets
            "transformers>=4.40", "nibabel>=5.0",
            "playwright>=1.40",  # the browser test of the HTML report (drives the system Chromium)
            "ray[data]>=2.60",  # fastcam.ray: its tests run a real local Ray and a two-node Ray cluster
            "ray[serve]>=2.60",  # fastcam.serve: its tests start the real service
            # pytorch-grad-cam's own dependencies but torchvision: grad-cam itself installs with --no-deps
            # (README's set-up), and the tests give it a stand-in torchvision (fastcam_testkit.pgc)
            "ttach>=0.0.3", "opencv-python-headless>=4.5",
        ],
        "docs": ["mkdocs>=1.6", "mkdocstrings[python]>=0.26"],
        # fastcam.deploy.export: torch's ONNX exporter (dynamo=True) needs onnx + onnxscript; onnxruntime runs
        # and checks the file (optional: without it the check runs the exported program instead)
        "deploy": ["onnx>=1.16", "onnxscript>=0.3", "onnxruntime>=1.17"],
        # Hugging Face models (`hf:PATH` model specs, local folders only), timm models (`timm:NAME`)
        "hf": ["transformers>=4.40"],
        "timm": ["timm>=0.9"],
        # NIfTI volumes for explain_dataset (DICOM series use pydicom, a core dependency)
        "nifti": ["nibabel>=5.0"],
        # fastcam.ray and `fastcam explain --engine ray`: Ray Data (reading, decoding, actor pools, Datasinks)
        "ray": ["ray[data]>=2.60"],
        # fastcam.serve: `fastcam serve`, explanations over HTTP on Ray Serve (dynamic batching, replicas)
        "serve": ["ray[serve]>=2.60"],
        # fastcam.compat.pytorch_grad_cam.utils.image.show_cam_on_image colours with OpenCV, as pytorch-grad-cam
        "compat": ["opencv-python-headless>=4.5"],
        "cuda": ["cupy-cuda12x>=13"],
        "cuml": ["cuml-cu12>=24.2"],
    },
    entry_points={"console_scripts": ["fastcam=fastcam.cli:main"]},
)
