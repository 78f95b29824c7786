"""prompttuner.tuning"""
