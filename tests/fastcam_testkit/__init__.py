"""Shared helpers of fastcam's tests (importable as `fastcam_testkit`: pytest.ini puts tests/ on the path)."""
