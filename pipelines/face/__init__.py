"""What a person sees: the reports' lines, the live progress bar and display."""
