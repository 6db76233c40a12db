"""Host drivers: how the engine reaches a machine (simulated in-process, psrp, winrm)."""
