"""Training methods of the papers that are more than an optimizer."""
