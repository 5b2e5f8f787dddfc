"""fastcam.io"""
