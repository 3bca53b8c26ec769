"""What an objective may be called: a name that is also a column (``score_NAME``), a tag and a
head of a multi-head reward model, so letters, digits and ``_``, starting with a letter."""

import re

OBJECTIVE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
