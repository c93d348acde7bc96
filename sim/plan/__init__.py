"""`servesim plan`: the cheapest minimal configurations meeting SLOs at a target load."""
