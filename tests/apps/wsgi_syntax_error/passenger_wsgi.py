"""A startup file that is not valid Python: the compiler rejects it before any line runs.

(So its print never happens: a SyntaxError stops the whole file. The error is one the
compiler finds, not the parser, so linters can still read this file.)
"""

print("syntax error app: never printed")

break  # noqa: F701 - the syntax error under test: 'break' outside a loop
