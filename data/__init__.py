"""Shipped assets of mlff, installed as the package ``mlff.assets`` (no code lives here)."""
