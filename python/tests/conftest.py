import os
import sys

# The tests' reference module sits beside them; the package comes from PYTHONPATH or the installed wheel.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
