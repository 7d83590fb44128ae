"""Helpers shared by every test directory: free ports and the tiny run specs."""
