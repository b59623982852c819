"""bioscale: Ray-distributed neural scaling studies for biological vision and phenotypic drug discovery.

Importing the package is cheap: torch, ray and mlflow are imported only by the modules that use
them, so ``bioscale --help`` and the configuration layer start instantly.
"""

__version__ = "0.1.0"
