"""A run of ``dscl-train`` / ``dscl-eval``: its folder (:mod:`.folder`), the datasets its
config names (:mod:`.datasets`), stage 1 (:mod:`.stage1`: train) and stage 2
(:mod:`.stage2`: evaluate the frozen backbone)."""
