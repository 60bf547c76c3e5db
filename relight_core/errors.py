"""The one exception type for mistakes a user can make (bad file, bad option, no face, ...).

Its message is one sentence that names the file, frame or field and says what to do. The CLI prints it
without a traceback and exits non-zero; the worker sends it as an `error` event.
"""


class UserError(Exception):
    """A problem with the user's input or environment, reported as one clear sentence."""
