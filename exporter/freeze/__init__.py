"""The freeze stage: variables become graph constants (or are lifted to stay variables
when they are large), lookup tables are frozen, and the result is proven bit-exact.
"""
