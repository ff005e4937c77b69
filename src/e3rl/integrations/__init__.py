"""Adapters that run e3rl's budget and temperature control inside other training frameworks.

Each adapter imports its framework lazily: importing ``e3rl`` never needs any of them.
"""
