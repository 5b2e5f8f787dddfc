"""fastcam.cluster"""
