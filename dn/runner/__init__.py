"""The llama.cpp runner (arrives with the models-and-queries issue)."""
