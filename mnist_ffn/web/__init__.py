"""The pages served on this machine: the demo (draw a digit) and the playground (TensorFlow Playground, live), and
the plumbing both servers share."""
