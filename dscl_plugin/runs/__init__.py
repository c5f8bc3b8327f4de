"""A run of ``dscl-train`` / ``dscl-eval``: its folder and saved settings (:mod:`.folder`),
the datasets its config names (:mod:`.datasets`), where it computes (:mod:`.compute`),
stage 1 (:mod:`.stage1`: train), stage 2 (:mod:`.stage2`: evaluate the frozen backbone)
and both in order (:mod:`.pipeline`). Neither stage imports the other."""
