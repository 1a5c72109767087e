"""The validate stage: a Great Expectations suite over a night's results, and quarantine for rows that fail it.

GX is imported only when validate_night runs, so importing this package stays cheap.
"""

from vramwatch.validate.frame import validation_frame
from vramwatch.validate.gate import ValidationSuiteError, expectations, validate_night

__all__ = ["ValidationSuiteError", "expectations", "validate_night", "validation_frame"]
