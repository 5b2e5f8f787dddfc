"""Helpers of bench/gpu_campaign.sh (the whole GPU measurement in one prepared run)."""
