"""Triton kernels, installed as fastcam.kernels (setup.py package_dir). Import is lazy: triton is optional."""
