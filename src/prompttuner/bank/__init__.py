"""prompttuner.bank"""
