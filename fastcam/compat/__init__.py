"""Other CAM libraries' APIs over fastcam, so their users switch by changing one import.

- `fastcam.compat.pytorch_grad_cam`: pytorch-grad-cam 1.5.7's classes, call signatures, target objects
  and image utilities (`from fastcam.compat import pytorch_grad_cam` in place of `import pytorch_grad_cam`).

Each is a thin adapter: the maps come from fastcam's explainers (`fastcam.methods`), batched on the
model's device; the adapter only translates arguments and the other library's output conventions.
docs/migrate.md maps every name onto fastcam's own API.
"""
