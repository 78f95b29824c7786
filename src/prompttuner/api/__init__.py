"""prompttuner.api"""
