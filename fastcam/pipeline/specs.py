"""Moved to `fastcam.models.specs` (the models floor, below the pipeline); its names are re-exported here."""
from fastcam.models.specs import (  # noqa: F401 - re-exported
    HF_PICKLED_WEIGHTS,
    HF_SAFE_WEIGHTS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SCHEMES,
    build,
    hf_class_names,
    hf_preprocessing,
    import_from_spec,
    prefix_tokens,
    spec_imports_code,
)
