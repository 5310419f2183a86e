# statesnap's genesis fee rate: how many chi (xian's unit of execution cost)
# one unit of `currency` buys. xian-abci reads `chi_cost.S:value` when it
# checks that a sender can pay and when it charges the fee.

S = Hash()


@construct
def seed(chi_per_unit: int = 20):
    S["value"] = chi_per_unit


@export
def current():
    return S["value"]
