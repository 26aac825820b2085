"""One package per capability (extract, qa, math, mlm): text -> model rows -> decode -> result. numpy only.

base.py holds the contract every task meets, registry.py which task serves which model.
"""
