"""`specsim verify`: a tuned policy proven on the live server against its baselines before it ships."""
