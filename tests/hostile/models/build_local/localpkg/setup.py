from setuptools import setup

setup(name="localpkg", version="0.1.0", py_modules=["localpkg"])
