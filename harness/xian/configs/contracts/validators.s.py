# statesnap's genesis validator set. xian-abci derives CometBFT validator
# updates from `active_validators` (a list of ed25519 public keys in hex) and
# `powers:<key>` after every block, so these must match genesis.json's
# validators. No elections, no staking: the set stays as genesis made it.

active_validators = Variable()
powers = Hash(default_value=10)
registration_fee = Variable()


@construct
def seed(genesis_nodes: list, genesis_powers: dict = {}, genesis_registration_fee: int = 0):
    active_validators.set(genesis_nodes)
    for node in genesis_nodes:
        if node in genesis_powers:
            powers[node] = genesis_powers[node]
        else:
            powers[node] = 10
    registration_fee.set(genesis_registration_fee)


@export
def validator_list():
    return active_validators.get()
