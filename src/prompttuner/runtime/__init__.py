"""prompttuner.runtime"""
