"""The one exception type for user mistakes (bad config, missing or corrupt data)."""


class UserError(Exception):
  """A problem the user can fix; its message says what is wrong and how to fix it.

  `launch.py` prints the message on one line and exits non-zero, without a traceback.
  """
