"""`tokenwarden`, the operators' command line (jobs/, web/ and devkit/ add their commands by entry point)."""
