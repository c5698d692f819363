"""Reinforcement learning (DAPO): rewards, the policy loss and advantages, dynamic sampling."""
