"""fastcam.metrics"""
