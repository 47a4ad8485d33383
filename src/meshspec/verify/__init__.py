"""`meshspec verify`: checks of reality against the plan, and the status report built from them."""
