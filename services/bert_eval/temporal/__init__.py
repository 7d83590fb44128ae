"""Thin Temporal layer: activities wrap core calls; workflows only orchestrate."""
