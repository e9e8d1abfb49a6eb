"""apps.digits: draw a digit, see the top-3 guesses, teach the model your handwriting.

    python3 -m apps.digits [--threads N] [--selftest]

``logic`` holds everything testable without a window; ``app`` and ``digits.kv`` the Kivy UI;
``model`` builds the pretrained CNN at first run (into the apps cache directory).
"""
