"""fastcam.io: reading images (Pillow, pydicom), the Zarr run store, overlays and the HTML report."""
from fastcam.io.images import ImageFolder, Preprocess, list_images, read_image
from fastcam.io.run import Run, open_run

__all__ = ["ImageFolder", "Preprocess", "Run", "list_images", "open_run", "read_image"]
