# Holder for the validated configuration values (see config.Config.plain).


class Values:
    def digest_hex(self):
        return self.digest
