"""The runtime adapter: runner processes serving GGUF models with llama-cpp-python.

It knows processes, ports, memory and HTTP to runners; what they mean for the database is
services/runtime/'s.
"""
