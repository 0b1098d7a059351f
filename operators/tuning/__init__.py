"""The tuning flow's pure logic: guardrails between the policy and the fleet."""
