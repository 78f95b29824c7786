"""prompttuner.sim"""
