"""Models. They name logical axes only, never mesh axes, and never see a mesh."""
